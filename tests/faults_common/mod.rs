//! Shared rig of the fault suites: a paced UDP+TCP query stream that counts every failed query,
//! /proc readers for a process's fds, RSS and threads, and small polling helpers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sextant_testkit::*;

pub(crate) const T: Duration = Duration::from_secs(3);

pub(crate) fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

pub(crate) fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Checks one reply of the stream; `Err` is a failed query.
pub(crate) type Check = Arc<dyn Fn(&str, &Reply) -> Result<(), String> + Send + Sync>;

/// Checks that the reply is NOERROR with exactly the answers one of `accepted` lists
/// (presentation form, whitespace-normalised, sorted).
pub(crate) fn answers_one_of(accepted: Vec<(String, Vec<Vec<String>>)>) -> Check {
    Arc::new(move |name: &str, r: &Reply| {
        let got = norm(r.answers());
        let Some((_, sets)) = accepted.iter().find(|(n, _)| n == name) else {
            return Err(format!("{name}: no expectation"));
        };
        if r.rcode_name() != "NOERROR" {
            return Err(format!("{name}: rcode {}", r.rcode_name()));
        }
        if sets.iter().any(|s| norm(s.clone()) == got) {
            Ok(())
        } else {
            Err(format!("{name}: answers {got:?}"))
        }
    })
}

pub(crate) fn norm(v: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = v
        .into_iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

#[derive(Default)]
pub(crate) struct Stats {
    pub udp_ok: AtomicU64,
    pub tcp_ok: AtomicU64,
    pub failed: AtomicU64,
    pub failures: Mutex<Vec<String>>,
}

impl Stats {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            f.push(what);
        }
    }
    pub(crate) fn ok(&self) -> u64 {
        self.udp_ok.load(Ordering::SeqCst) + self.tcp_ok.load(Ordering::SeqCst)
    }
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
    pub(crate) fn report(&self) -> String {
        format!(
            "udp ok {}, tcp ok {}, failed {}: {:?}",
            self.udp_ok.load(Ordering::SeqCst),
            self.tcp_ok.load(Ordering::SeqCst),
            self.failed(),
            self.failures.lock().unwrap()
        )
    }
}

/// A paced query stream: `udp_qps` over 4 UDP workers (one socket per query, like stub
/// resolvers) and `tcp_qps` over 2 persistent TCP connections (queries stay in flight across
/// reloads). One attempt per query, 2 s timeout: a timeout, a wrong answer or a connection
/// closed under a query is a failure.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    handles: Vec<JoinHandle<()>>,
    started: Instant,
}

const QT: Duration = Duration::from_secs(2);

impl Load {
    pub(crate) fn start(
        addr: SocketAddr,
        udp_qps: u32,
        tcp_qps: u32,
        names: Vec<(String, RecordType)>,
        check: Check,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let mut handles = Vec::new();
        let workers = [(false, 4u32, udp_qps), (true, 2u32, tcp_qps)];
        for (is_tcp, n, qps) in workers {
            if qps == 0 {
                continue;
            }
            for w in 0..n {
                let (stop, stats, names, check) =
                    (stop.clone(), stats.clone(), names.clone(), check.clone());
                let every = Duration::from_secs_f64(f64::from(n) / f64::from(qps));
                handles.push(std::thread::spawn(move || {
                    let mut conn: Option<TcpConn> = None;
                    let mut next = Instant::now();
                    let mut i = w as usize;
                    while !stop.load(Ordering::SeqCst) {
                        let (name, t) = &names[i % names.len()];
                        i += 1;
                        let q = Query::new(name, *t);
                        let res = if is_tcp {
                            tcp_once(&mut conn, addr, &q)
                        } else {
                            udp(addr, &q, QT).map_err(|e| e.to_string())
                        };
                        match res.and_then(|r| check(name, &r)) {
                            Ok(()) if is_tcp => {
                                stats.tcp_ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(()) => {
                                stats.udp_ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => stats.fail(format!(
                                "{} {name}: {e}",
                                if is_tcp { "tcp" } else { "udp" }
                            )),
                        }
                        next += every;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else if now - next > Duration::from_millis(200) {
                            next = now; // fell behind: do not burst
                        }
                    }
                }));
            }
        }
        Load {
            stop,
            stats,
            handles,
            started: Instant::now(),
        }
    }

    /// Stops the workers (each finishes its query in flight) and returns the totals.
    pub(crate) fn stop(mut self) -> Arc<Stats> {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "load: {:.0} qps over {secs:.1} s; {}",
            self.stats.ok() as f64 / secs,
            self.stats.report()
        );
        self.stats.clone()
    }
}

fn tcp_once(conn: &mut Option<TcpConn>, addr: SocketAddr, q: &Query) -> Result<Reply, String> {
    if conn.is_none() {
        *conn = Some(TcpConn::connect(addr, QT).map_err(|e| format!("connect: {e}"))?);
    }
    let c = conn.as_mut().unwrap();
    let res = c
        .send_query(q)
        .and_then(|_| c.recv_reply(QT))
        .map_err(|e| e.to_string());
    if res.is_err() {
        *conn = None;
    }
    res
}

/// (open fds, VmRSS KiB, threads) of a process, from /proc.
pub(crate) fn proc_stats(pid: u32) -> (usize, u64, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (fds, field("VmRSS:"), field("Threads:"))
}

/// Polls `f` every 20 ms until it returns `Some` or `within` passes.
pub(crate) fn poll<R>(within: Duration, mut f: impl FnMut() -> Option<R>) -> Option<R> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(r) = f() {
            return Some(r);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Time until a UDP query for `name` gives `rcode` with answers containing `needle`.
pub(crate) fn until_answer(
    a: SocketAddr,
    name: &str,
    t: RecordType,
    rcode: &str,
    needle: &str,
    within: Duration,
) -> Option<Duration> {
    let t0 = Instant::now();
    poll(within, || {
        let r = udp(a, &Query::new(name, t), Duration::from_millis(500)).ok()?;
        (r.rcode_name() == rcode && r.answers().join("\n").contains(needle)).then(|| t0.elapsed())
    })
}

pub(crate) fn http_status(port: u16, path: &str) -> u16 {
    http_get(lo(port), path, T).map(|(c, _)| c).unwrap_or(0)
}

/// Checks NOERROR with one A record per name whose address is as given (any TTL: caches count
/// it down).
pub(crate) fn address_check(want: Vec<(String, String)>) -> Check {
    Arc::new(move |name: &str, r: &Reply| {
        let Some((_, ip)) = want.iter().find(|(n, _)| n == name) else {
            return Err(format!("{name}: no expectation"));
        };
        let ans = r.answers();
        let ok = r.rcode_name() == "NOERROR"
            && ans.len() == 1
            && ans[0].starts_with(&format!("{name} "))
            && ans[0].ends_with(&format!(" IN A {ip}"));
        if ok {
            Ok(())
        } else {
            Err(format!("{name}: {} {ans:?}", r.rcode_name()))
        }
    })
}
