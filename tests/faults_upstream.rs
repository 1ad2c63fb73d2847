//! Upstream faults through the testkit `FaultProxy` (faults.md §5.2) and the random-subdomain
//! flood against a forwarded zone (§5.6): the real binary forwards to a scripted upstream (and
//! Knot once) behind a proxy that delays, loses (seeded), reorders, duplicates, truncates and
//! resets; every client query is counted, answers are checked in full, and nothing leaves
//! 127.0.0.1.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sextant_testkit::hickory_proto::op::ResponseCode;
use sextant_testkit::*;

const T: Duration = Duration::from_secs(8);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

/// A running server: `lines` in the `.` block after `errors`, and an `invalid.` block answered
/// by `whoami` so start-up probes never reach the upstreams.
struct Srv {
    s: Sextant,
    dns: SocketAddr,
}

fn start_with(builder: impl FnOnce(SextantBuilder) -> SextantBuilder, lines: &str) -> Srv {
    let port = free_port();
    let cf = format!(".:{port} {{\n errors\n {lines}\n}}\ninvalid.:{port} {{\n whoami\n}}\n");
    let mut s = builder(Sextant::builder(bin(), &cf)).start();
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.wait_dns(dns, Duration::from_secs(10)).unwrap();
    Srv { s, dns }
}

fn start(lines: &str) -> Srv {
    start_with(|b| b, lines)
}

/// An upstream answering every A query `<name> 300 IN A 192.0.2.1` (AA).
fn answering() -> Upstream {
    Upstream::start(|req: &UpstreamRequest| {
        req.reply()
            .aa(true)
            .answer(&format!("{} 300 IN A 192.0.2.1", req.name()))
            .action()
    })
    .unwrap()
}

/// Sends every query from its own UDP socket at once, then collects for `wait`: per query the
/// replies that came back (id and question matching), so duplicates and silence both show.
fn burst(dns: SocketAddr, names: &[String], wait: Duration) -> Vec<Vec<Reply>> {
    let socks: Vec<(UdpSocket, u16)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(dns).unwrap();
            let id = 1000 + i as u16;
            s.send(&Query::new(n, RecordType::A).id(id).to_bytes())
                .unwrap();
            s.set_nonblocking(true).unwrap();
            (s, id)
        })
        .collect();
    let mut out: Vec<Vec<Reply>> = vec![Vec::new(); names.len()];
    let end = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        let mut got = false;
        for (i, (s, id)) in socks.iter().enumerate() {
            while let Ok(n) = s.recv(&mut buf) {
                got = true;
                let r = Reply::parse(buf[..n].to_vec()).unwrap();
                assert_eq!(r.id(), *id, "reply for another query");
                assert_eq!(r.question().unwrap(), format!("{} IN A", names[i]));
                out[i].push(r);
            }
        }
        if !got {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    out
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}.example.")).collect()
}

fn assert_answer(r: &Reply, name: &str) {
    assert_eq!(r.rcode_name(), "NOERROR", "{name}");
    assert_eq!(r.flags(), "qr,aa,rd", "{name}");
    assert_eq!(r.answers(), vec![format!("{name} 300 IN A 192.0.2.1")]);
    assert!(r.authority().is_empty() && r.additional().is_empty());
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Delay under the 2 s read timeout: every answer delivered once, after the delay; delay over
/// it: the next upstream is tried and answers, still exactly one reply per query.
#[test]
fn delay_below_and_above_read_timeout() {
    let up = answering();
    let slow =
        FaultProxy::start(up.addr(), Faults::none().delay(Duration::from_millis(1500))).unwrap();
    let srv = start(&format!("forward . {}", slow.addr()));
    let ns = names("d", 10);
    let t0 = Instant::now();
    let got = burst(srv.dns, &ns, Duration::from_millis(3500));
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.len(), 1, "{}: {} replies", ns[i], r.len());
        assert_answer(&r[0], &ns[i]);
    }
    assert!(t0.elapsed() >= Duration::from_millis(1500));
    assert_eq!(slow.stats().udp_queries, 10);

    // 2.5 s delay: the 2 s read timeout moves on to the second upstream (policy sequential).
    let fast = answering();
    slow.set_faults(Faults::none().delay(Duration::from_millis(2500)));
    let srv2 = start(&format!(
        "forward . {} {} {{\n policy sequential\n }}",
        slow.addr(),
        fast.addr()
    ));
    let ns = names("e", 5);
    let t0 = Instant::now();
    let got = burst(srv2.dns, &ns, Duration::from_millis(4500));
    for (i, r) in got.iter().enumerate() {
        assert_eq!(
            r.len(),
            1,
            "{}: {} replies (late answer relayed?)",
            ns[i],
            r.len()
        );
        assert_answer(&r[0], &ns[i]);
    }
    assert!(t0.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        fast.queries(),
        5,
        "each query tried on the second upstream once"
    );
    drop(srv);
}

/// Seeded 25 % loss each way: every client query gets exactly one reply within the 5 s deadline
/// (+10 %), the right answer or SERVFAIL; the failures are counted and bounded.
#[test]
fn seeded_loss_answers_or_servfail_within_deadline() {
    let up = answering();
    let proxy = FaultProxy::start(up.addr(), Faults::none().loss(0.25).seed(7)).unwrap();
    let srv = start(&format!("forward . {}", proxy.addr()));
    let ns = names("l", 40);
    let t0 = Instant::now();
    let got = burst(srv.dns, &ns, Duration::from_millis(6500));
    let (mut ok, mut servfail) = (0, 0);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.len(), 1, "{}: {} replies", ns[i], r.len());
        match r[0].rcode_name().as_str() {
            "NOERROR" => {
                assert_answer(&r[0], &ns[i]);
                ok += 1;
            }
            "SERVFAIL" => {
                assert!(r[0].answers().is_empty());
                servfail += 1;
            }
            other => panic!("{}: {other}", ns[i]),
        }
    }
    let st = proxy.stats();
    eprintln!(
        "loss 25%: {ok} answered, {servfail} SERVFAIL of 40; proxy {st:?}; {:?}",
        t0.elapsed()
    );
    assert!(st.dropped > 0, "the seed drops something");
    // One exchange succeeds with p = 0.75² ≈ 0.56; with the retries inside the deadline most
    // queries must get through.
    assert!(ok >= 20, "only {ok} of 40 answered");
}

/// Every reply duplicated, half of them held back and sent out of order: each client query gets
/// its own answer exactly once.
#[test]
fn reordered_and_duplicated_replies_answer_once() {
    let up = answering();
    let proxy = FaultProxy::start(
        up.addr(),
        Faults::none().duplicate(1.0).reorder(0.5).seed(3),
    )
    .unwrap();
    let srv = start(&format!("forward . {}", proxy.addr()));
    let ns = names("r", 30);
    let got = burst(srv.dns, &ns, Duration::from_millis(2500));
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.len(), 1, "{}: {} replies", ns[i], r.len());
        assert_answer(&r[0], &ns[i]);
    }
    let st = proxy.stats();
    assert!(st.duplicated >= 30 && st.reordered > 0, "{st:?}");
    // The same names again come from the cache-free forward: still one answer each.
    let got = burst(srv.dns, &ns[..5], Duration::from_millis(1500));
    assert!(got.iter().all(|r| r.len() == 1));
}

/// TC=1 cut replies: a UDP client gets TC=1 (never FORMERR), a TCP client the full answer over
/// a TCP upstream, and the truncated reply is never cached.
#[test]
fn truncated_relayed_retried_over_tcp_never_cached() {
    let up = answering();
    let proxy = FaultProxy::start(up.addr(), Faults::none().truncate(true)).unwrap();
    let srv = start(&format!("cache 300\n forward . {}", proxy.addr()));

    let r = udp(srv.dns, &Query::new("tc.example.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.truncated(), "flags {}", r.flags());
    assert!(r.answers().is_empty());
    assert_eq!(proxy.stats().truncated, 1);

    let r = tcp(srv.dns, &Query::new("tcp.example.", RecordType::A), T).unwrap();
    assert_answer(&r, "tcp.example.");
    assert!(proxy.stats().tcp_connections >= 1);

    // Faults off: the same UDP question reaches the upstream again (nothing cached) and comes
    // back whole.
    proxy.set_faults(Faults::none());
    let before = up.queries_for("tc.example.");
    let r = udp(srv.dns, &Query::new("tc.example.", RecordType::A), T).unwrap();
    assert!(!r.truncated());
    assert_answer(&r, "tc.example.");
    assert_eq!(
        up.queries_for("tc.example."),
        before + 1,
        "TC reply was cached"
    );
    // And now it is cached (the whole answer is).
    let r = udp(srv.dns, &Query::new("tc.example.", RecordType::A), T).unwrap();
    assert_eq!(r.answers().len(), 1);
    assert_eq!(up.queries_for("tc.example."), before + 1);
}

/// TCP upstream that resets instead of answering: the next upstream answers within the
/// deadline; alone, it gives SERVFAIL within 5 s + 10 %; connections are not leaked.
#[test]
fn tcp_reset_fails_over_and_does_not_leak() {
    let up = answering();
    let good = answering();
    let proxy = FaultProxy::start(up.addr(), Faults::none().tcp_reset(true)).unwrap();
    let srv = start(&format!(
        "forward . {} {} {{\n force_tcp\n policy sequential\n }}",
        proxy.addr(),
        good.addr()
    ));
    let pid = srv.s.pid();
    let fds0 = open_fds(pid);
    for i in 0..20 {
        let n = format!("rst{i}.example.");
        let t0 = Instant::now();
        let r = udp(srv.dns, &Query::new(&n, RecordType::A), T).unwrap();
        assert_answer(&r, &n);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    assert!(proxy.stats().tcp_resets >= 1, "{:?}", proxy.stats());
    assert!(good.queries_tcp() >= 20);
    std::thread::sleep(Duration::from_millis(300));
    let fds1 = open_fds(pid);
    assert!(fds1 <= fds0 + 4, "fds {fds0} -> {fds1}");

    let alone = start(&format!("forward . {} {{\n force_tcp\n }}", proxy.addr()));
    let t0 = Instant::now();
    let r = udp(alone.dns, &Query::new("alone.example.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    assert!(r.answers().is_empty());
    assert!(
        t0.elapsed() < Duration::from_millis(5500),
        "{:?}",
        t0.elapsed()
    );
}

/// Knot behind a delaying, lossy proxy: what gets through is exactly Knot's answer.
#[test]
fn knot_through_lossy_proxy_matches_knot() {
    let zone = "$TTL 300\n@ SOA ns hostmaster 1 7200 1800 86400 30\n@ NS ns\nns A 192.0.2.53\n\
                www A 192.0.2.80\nwww AAAA 2001:db8::80\nalias CNAME www\ntxt TXT \"hello\"\n";
    let knot = Knot::start("example.test.", zone).unwrap();
    let proxy = FaultProxy::start(
        knot.addr(),
        Faults::none()
            .delay(Duration::from_millis(100))
            .loss(0.1)
            .seed(11),
    )
    .unwrap();
    let srv = start(&format!("forward example.test {}", proxy.addr()));
    let qs = [
        ("www.example.test.", RecordType::A),
        ("www.example.test.", RecordType::AAAA),
        ("alias.example.test.", RecordType::A),
        ("txt.example.test.", RecordType::TXT),
        ("nope.example.test.", RecordType::A),
        ("example.test.", RecordType::SOA),
        ("www.example.test.", RecordType::MX),
    ];
    let mut failed = 0;
    for _round in 0..3 {
        for (n, t) in qs {
            let q = Query::new(n, t).edns(1232);
            let want = udp(knot.addr(), &q, T).unwrap();
            let got = udp(srv.dns, &q, T).unwrap();
            if got.rcode_name() == "SERVFAIL" {
                failed += 1;
                continue;
            }
            assert_eq!(got.rcode_name(), want.rcode_name(), "{n} {t}");
            assert_eq!(got.flags(), want.flags(), "{n} {t}");
            assert_eq!(got.answers(), want.answers(), "{n} {t}");
            assert_eq!(got.authority(), want.authority(), "{n} {t}");
        }
    }
    eprintln!("knot via 10% loss: {failed} of 21 SERVFAIL");
    assert!(failed <= 3, "{failed} of 21 failed");
}

/// Random-subdomain flood (§5.6): 3 000 unique names under a forwarded zone whose upstream
/// takes 200 ms. `max_concurrent 20` caps what is in flight upstream (the excess is REFUSED at
/// once), NXDOMAINs are cached so repeats do not go upstream, RSS stays bounded, and
/// kubernetes-zone queries keep their latency during the flood.
#[test]
fn random_subdomain_flood_is_contained() {
    const MAX: usize = 20;
    const DELAY: Duration = Duration::from_millis(200);
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let a2 = arrivals.clone();
    let up = Upstream::start(move |req: &UpstreamRequest| {
        a2.lock().unwrap().push(req.at);
        Action::Delay(
            DELAY,
            Box::new(
                req.reply()
                    .aa(true)
                    .rcode(ResponseCode::NXDomain)
                    .authority(
                        "flood.test. 60 IN SOA ns.flood.test. h.flood.test. 1 7200 1800 86400 60",
                    )
                    .action(),
            ),
        )
    })
    .unwrap();
    let manifest = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\n\
                    spec:\n  clusterIP: 10.96.0.1\n  clusterIPs: [10.96.0.1]\n  ports: [{name: https, port: 443, protocol: TCP}]\n";
    let srv = start_with(
        |b| b.file("cluster.yaml", manifest),
        &format!(
            "cache 300\n kubernetes cluster.local {{\n manifests cluster.yaml\n }}\n \
             forward flood.test {} {{\n max_concurrent {MAX}\n }}",
            up.addr()
        ),
    );
    let pid = srv.s.pid();
    let kq = Query::new("kubernetes.default.svc.cluster.local.", RecordType::A);
    let r = udp(srv.dns, &kq, T).unwrap();
    assert_eq!(
        r.answers(),
        vec!["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]
    );
    let rss0 = vm_rss_kib(pid);

    // Kubernetes-zone prober, sequential, during the whole flood.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dns, st) = (srv.dns, stop.clone());
    let prober = std::thread::spawn(move || {
        let mut lat = Vec::new();
        let mut failed = 0;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            let t0 = Instant::now();
            match udp(dns, &kq, Duration::from_secs(1)) {
                Ok(r) if r.answers().len() == 1 => lat.push(t0.elapsed()),
                _ => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (lat, failed)
    });

    // The flood: 3 000 unique names from 4 sockets, paced at about 3 000 q/s.
    const N: usize = 3000;
    let counts: Arc<Mutex<HashMap<u16, String>>> = Arc::default();
    let t_flood = Instant::now();
    let senders: Vec<_> = (0..4)
        .map(|k| {
            let counts = counts.clone();
            std::thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                // Replies are read while sending, so the socket buffer never overflows.
                let r = s.try_clone().unwrap();
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let d2 = done.clone();
                let reader = std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    let mut quiet_since: Option<Instant> = None;
                    loop {
                        match r.recv_from(&mut buf) {
                            Ok((n, _)) => {
                                quiet_since = None;
                                let r = Reply::parse(buf[..n].to_vec()).unwrap();
                                let dup = counts.lock().unwrap().insert(r.id(), r.rcode_name());
                                assert!(dup.is_none(), "two replies to id {}", r.id());
                            }
                            Err(_) if d2.load(std::sync::atomic::Ordering::Relaxed) => {
                                let q = *quiet_since.get_or_insert_with(Instant::now);
                                if q.elapsed() > Duration::from_secs(2) {
                                    break;
                                }
                            }
                            Err(_) => {}
                        }
                    }
                });
                for i in (k..N).step_by(4) {
                    let q =
                        Query::new(&format!("x{i}-{k}.flood.test."), RecordType::A).id(i as u16);
                    s.send_to(&q.to_bytes(), dns).unwrap();
                    if i % 40 < 4 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                reader.join().unwrap();
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let flood_time = t_flood.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut lat, kfailed) = prober.join().unwrap();
    let rss1 = vm_rss_kib(pid);

    let results = counts.lock().unwrap().clone();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for rc in results.values() {
        *counts.entry(rc.clone()).or_default() += 1;
    }
    let answered = results.len();
    let nx = counts.get("NXDOMAIN").copied().unwrap_or(0);
    let refused = counts.get("REFUSED").copied().unwrap_or(0);
    // Upstream in flight: queries that arrived less than DELAY after another one was still
    // unanswered (a lower bound on what Sextant had outstanding, so it must stay <= MAX).
    let arr = arrivals.lock().unwrap().clone();
    let mut max_inflight = 0;
    for (i, t) in arr.iter().enumerate() {
        let n = arr[..=i]
            .iter()
            .filter(|u| t.duration_since(**u) < DELAY)
            .count();
        max_inflight = max_inflight.max(n);
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    eprintln!(
        "flood: {N} sent in {flood_time:?}; replies {answered} ({counts:?}); upstream {} queries, \
         max in flight {max_inflight}; RSS {rss0} -> {rss1} KiB; k8s probes {} (failed {kfailed}) \
         p50 {:?} p99 {:?} max {:?}",
        arr.len(),
        lat.len(),
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    assert_eq!(
        answered, N,
        "every flood query answered (NXDOMAIN or REFUSED)"
    );
    assert_eq!(nx + refused, N, "{counts:?}");
    assert!(
        refused > 0,
        "max_concurrent never reached: the flood is too gentle"
    );
    assert!(max_inflight <= MAX, "{max_inflight} in flight upstream");
    assert_eq!(arr.len(), nx, "one upstream query per NXDOMAIN");
    assert!(rss1 < rss0 + 20 * 1024, "RSS {rss0} -> {rss1} KiB");
    assert_eq!(kfailed, 0);
    assert!(lat.len() >= 100, "only {} k8s probes", lat.len());
    assert!(p(0.99) < Duration::from_millis(50), "k8s p99 {:?}", p(0.99));

    // Repeats of names that got NXDOMAIN come from the negative cache: none goes upstream.
    let before = up.queries();
    let mut repeated = 0;
    for i in (0..N)
        .filter(|i| results.get(&(*i as u16)).map(String::as_str) == Some("NXDOMAIN"))
        .take(200)
    {
        let n = format!("x{i}-{}.flood.test.", i % 4);
        let r = udp(srv.dns, &Query::new(&n, RecordType::A), T).unwrap();
        assert_eq!(r.rcode_name(), "NXDOMAIN", "{n}");
        assert!(r.answers().is_empty());
        assert_eq!(r.authority().len(), 1, "{n}: SOA");
        repeated += 1;
    }
    assert_eq!(repeated, 200.min(nx));
    assert_eq!(up.queries(), before, "cached NXDOMAINs went upstream again");
}
