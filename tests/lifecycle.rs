//! The plugin lifecycle with the real binary: failed and good reloads leave nothing running
//! (threads, fds, the health self-probe rate and the generation task gauge back at their
//! baseline), `-check` binds and starts nothing, and a soak of 1,000 reloads alternating two
//! Corefiles that differ in every plugin's settings loses no query and grows nothing.

mod faults_common;

use std::time::{Duration, Instant};

use faults_common::*;
use sextant_testkit::*;

/// A metric's value (first sample whose line starts with `name`), from `/metrics` on `port`.
fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(lo(port), "/metrics", T).ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// Health self-probes per second over `window`, from the probe histogram's count.
fn probe_rate(mport: u16, window: Duration) -> f64 {
    let name = "coredns_health_request_duration_seconds_count";
    let a = metric(mport, name).unwrap_or(0.0);
    std::thread::sleep(window);
    let b = metric(mport, name).unwrap_or(0.0);
    (b - a) / window.as_secs_f64()
}

/// Sends SIGUSR1 and waits until one more `line` than `before` was logged.
fn reload_and_wait(s: &Sextant, line: &str, before: usize) {
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_nth_line(line, before + 1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no {line:?} #{}: {e}\n{}", before + 1, s.output()));
}

struct Rig {
    port: u16,
    mport: u16,
    up: Upstream,
}

impl Rig {
    fn new() -> Rig {
        let up = Upstream::start(|req: &UpstreamRequest| {
            req.reply()
                .answer(&format!("{} 60 IN A 192.0.2.50", req.name()))
                .action()
        })
        .unwrap();
        Rig {
            port: free_port(),
            mport: free_port(),
            up,
        }
    }

    /// A Corefile whose every background-task plugin is on; `v` (0 or 1) changes every
    /// setting, `bad` adds an unknown directive.
    fn corefile(&self, v: usize, hport: u16, bad: bool) -> String {
        let (reload, consolidate, hc) = [("1s", "5s", "1s"), ("2s", "10s", "2s")][v];
        format!(
            ".:{port} {{\n    health 127.0.0.1:{hport}\n    prometheus 127.0.0.1:{mport}\n    \
             errors {{\n        consolidate {consolidate} \".*\"\n    }}\n    \
             hosts hosts.txt example.org {{\n        reload {reload}\n        fallthrough\n    }}\n    \
             loadbalance weighted weights.txt {{\n        reload {reload}\n    }}\n    \
             forward . {up} {{\n        health_check {hc}\n    }}\n{bad}}}\n",
            port = self.port,
            mport = self.mport,
            up = self.up.addr(),
            bad = if bad { "    no_such_plugin\n" } else { "" },
        )
    }
}

#[test]
fn failed_and_good_reloads_leave_nothing_running() {
    let rig = Rig::new();
    let (h1, h2) = (free_port(), free_port());
    let s = Sextant::builder(bin(), &rig.corefile(0, h1, false))
        .file("hosts.txt", "192.0.2.1 a.example.org\n")
        .file("weights.txt", "a.example.org\n192.0.2.1 100\n")
        .start();
    let a = lo(rig.port);
    until_answer(
        a,
        "a.example.org.",
        RecordType::A,
        "NOERROR",
        "192.0.2.1",
        T,
    )
    .expect("serving");
    // Baseline, once the first probes and file reloads ran.
    std::thread::sleep(Duration::from_secs(2));
    let base = proc_stats(s.pid());
    let base_tasks = metric(rig.mport, "sextant_generation_tasks").expect("task gauge");
    let base_rate = probe_rate(rig.mport, Duration::from_secs(3));
    assert_eq!(metric(rig.mport, "sextant_generations_running"), Some(1.0));
    assert!(
        base_tasks >= 5.0,
        "health, errors, hosts, loadbalance, forward: {base_tasks}"
    );
    assert!(
        (0.5..=1.5).contains(&base_rate),
        "one probe a second: {base_rate}"
    );

    // Five failed reloads: every setting changed and an unknown directive.
    s.rewrite_corefile(&rig.corefile(1, h2, true)).unwrap();
    for i in 0..5 {
        reload_and_wait(&s, "reload failed", i);
    }
    // Forty good reloads, alternating, ending on the first Corefile.
    for i in 0..40 {
        s.rewrite_corefile(&rig.corefile((i + 1) % 2, [h1, h2][(i + 1) % 2], false))
            .unwrap();
        reload_and_wait(&s, "Reloading complete", i);
    }
    until_answer(
        a,
        "a.example.org.",
        RecordType::A,
        "NOERROR",
        "192.0.2.1",
        T,
    )
    .expect("still serving");
    // The blocking pool's idle threads (file reloads) leave after 10 s of idleness; let the
    // last generation settle like the baseline did.
    std::thread::sleep(Duration::from_secs(2));
    let tasks = metric(rig.mport, "sextant_generation_tasks").unwrap();
    let rate = probe_rate(rig.mport, Duration::from_secs(3));
    let after = proc_stats(s.pid());
    eprintln!(
        "baseline (fds, rss KiB, threads) {base:?} tasks {base_tasks} probes/s {base_rate:.2}; \
         after {after:?} tasks {tasks} probes/s {rate:.2}"
    );
    assert_eq!(tasks, base_tasks, "task gauge back at its baseline");
    assert_eq!(metric(rig.mport, "sextant_generations_running"), Some(1.0));
    assert!(
        (0.5..=1.5).contains(&rate),
        "probe rate {base_rate} -> {rate}"
    );
    assert!(after.0 <= base.0 + 2, "fds {base:?} -> {after:?}");
    assert!(after.2 <= base.2 + 2, "threads {base:?} -> {after:?}");
    // Nothing answers on the address of the retired health endpoint.
    assert_eq!(http_status(h2, "/health"), 0);
    assert_eq!(http_status(h1, "/health"), 200);
    assert_eq!(s.count_lines("panic"), 0);
}

#[test]
fn check_binds_and_starts_nothing() {
    let rig = Rig::new();
    // The health port is taken: -check must not even try to bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hport = taken.local_addr().unwrap().port();
    let b = Sextant::builder(bin(), &rig.corefile(0, hport, false))
        .file("hosts.txt", "192.0.2.1 a.example.org\n")
        .file("weights.txt", "a.example.org\n192.0.2.1 100\n")
        .arg("-check");
    let t0 = Instant::now();
    let (code, out, err) = Sextant::run_to_end(b, Duration::from_secs(10)).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Corefile OK"), "{out}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // And the DNS port was never bound either.
    assert!(std::net::UdpSocket::bind(lo(rig.port)).is_ok());
}

/// Two Corefiles differing in the settings of every plugin they use.
fn soak_corefile(port: u16, [mport, rport, hport]: [u16; 3], up: &str, v: usize) -> String {
    let p = |a: &'static str, b: &'static str| if v == 0 { a } else { b };
    format!(
        ".:{port} {{\n    reload {reload}\n    {debug}\n    ready 127.0.0.1:{rport}\n    \
         health 127.0.0.1:{hport}\n    prometheus 127.0.0.1:{mport}\n    errors {{\n        \
         consolidate {cons} \".*\"\n    }}\n    log . \"{logfmt}\"\n    any\n    \
         chaos {chaos}\n    loadbalance {lb}\n    rewrite name exact {rw_from} a.example.org\n    \
         cache {cache}\n    hosts hosts.txt example.org {{\n        reload {hr}\n        \
         fallthrough\n    }}\n    loop\n    forward . {up} {{\n        policy {policy}\n        \
         health_check {hc}\n        expire {expire}\n    }}\n}}\n\
         cluster.local:{port} {{\n    kubernetes cluster.local {{\n        manifests cluster.yaml\n        \
         ttl {kttl}\n    }}\n    cache {cache}\n}}\n",
        reload = p("30s", "40s"),
        debug = p("debug", ""),
        cons = p("5s", "10s"),
        logfmt = p("{name} {type}", "{type} {name}"),
        chaos = p("v1 a@b", "v2 c@d"),
        lb = p("round_robin", "round_robin {\n        prefer 10.0.0.0/8\n    }"),
        rw_from = p("alias1.example.org", "alias2.example.org"),
        cache = p("30", "60"),
        hr = p("1s", "2s"),
        policy = p("random", "sequential"),
        hc = p("1s", "2s"),
        expire = p("10s", "20s"),
        kttl = p("5", "10"),
    )
}

/// The process's (fds, RSS KiB, threads) a second after a reload, fds the least of ten samples:
/// by then the configuration's `forward` has its pooled upstream sockets open (none in the
/// middle of the reloads, where each instance lives a few ms), and the load's TCP queries come
/// and go (one or two at a time). A leak raises the least too.
fn settled(pid: u32) -> (usize, u64, u64) {
    std::thread::sleep(Duration::from_secs(1));
    let mut s = proc_stats(pid);
    for _ in 0..9 {
        std::thread::sleep(Duration::from_millis(100));
        s.0 = s.0.min(proc_stats(pid).0);
    }
    s
}

#[test]
fn soak_1000_reloads_under_queries() {
    const RELOADS: usize = 1000;
    const LIMIT: Duration = Duration::from_secs(240);
    let up = Upstream::start(|req: &UpstreamRequest| {
        req.reply()
            .answer(&format!("{} 60 IN A 192.0.2.50", req.name()))
            .action()
    })
    .unwrap();
    let port = free_port();
    let http = [free_port(), free_port(), free_port()];
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster.yaml"),
    )
    .unwrap();
    let upa = up.addr().to_string();
    let s = Sextant::builder(bin(), &soak_corefile(port, http, &upa, 0))
        .file("hosts.txt", "192.0.2.1 a.example.org\n")
        .file("cluster.yaml", manifest)
        .start();
    let a = lo(port);
    until_answer(
        a,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        "NOERROR",
        "",
        T,
    )
    .expect("serving");
    let names: Vec<(String, RecordType)> = vec![
        ("a.example.org.".into(), RecordType::A),
        ("n1.fwd.test.".into(), RecordType::A),
        ("n2.fwd.test.".into(), RecordType::A),
    ];
    let check = address_check(vec![
        ("a.example.org.".into(), "192.0.2.1".into()),
        ("n1.fwd.test.".into(), "192.0.2.50".into()),
        ("n2.fwd.test.".into(), "192.0.2.50".into()),
    ]);
    let load = Load::start(a, 200, 50, names, check);
    let t0 = Instant::now();
    let mut warm = None;
    for i in 0..RELOADS {
        assert!(t0.elapsed() < LIMIT, "only {i} reloads in {LIMIT:?}");
        s.rewrite_corefile(&soak_corefile(port, http, &upa, (i + 1) % 2))
            .unwrap();
        reload_and_wait(&s, "Reloading complete", i);
        if i == 99 {
            warm = Some(settled(s.pid()));
        }
    }
    let end = settled(s.pid());
    let stats = load.stop();
    let warm = warm.unwrap();
    eprintln!(
        "soak: {RELOADS} reloads in {:.1} s; (fds, rss KiB, threads) after 100 {warm:?}, end {end:?}",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(stats.failed(), 0, "{}", stats.report());
    assert!(stats.ok() > 1000, "{}", stats.report());
    // forward pools as many upstream sockets as the load had in flight at once (more on a
    // loaded machine, 22-25 seen); a descriptor leaked per reload would be hundreds.
    assert!(end.0 <= warm.0 + 6, "fds {warm:?} -> {end:?}");
    assert!(end.2 <= warm.2 + 2, "threads {warm:?} -> {end:?}");
    assert!(end.1 <= warm.1 + 2048, "rss {warm:?} -> {end:?}");
    assert_eq!(s.count_lines("panic"), 0);
    assert_eq!(s.count_lines("reload failed"), 0);
}
