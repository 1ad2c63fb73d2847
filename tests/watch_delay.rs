//! Measurement (ignored by default, not a pass/fail test of the suite): delay from a change
//! applied in the fake API server to the changed answer served over UDP by the real binary,
//! with a 10k services / 100k endpoints / 30k pods cluster loaded. Run in release:
//! `cargo test --release --test watch_delay -- --ignored --nocapture`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sextant_fakeapi::{endpoint, endpoint_slice, namespace, pod, service, FakeApi};
use sextant_testkit::*;

fn fixture(api: &FakeApi) -> (usize, usize, usize) {
    let (services, per_slice, pods, nss) = (10_000usize, 10usize, 30_000usize, 100usize);
    let mut objs: Vec<Value> = Vec::new();
    for n in 0..nss {
        objs.push(namespace(&format!("ns-{n}")).build());
    }
    for i in 0..services {
        let ns = format!("ns-{}", i % nss);
        let name = format!("svc-{i}");
        let mut svc = service(&ns, &name).port("http", 80, "TCP");
        svc = if i % 5 == 0 {
            svc.headless()
        } else {
            svc.cluster_ip(&format!("10.96.{}.{}", i / 256, i % 256))
        };
        objs.push(svc.build());
        let mut sl = endpoint_slice(&ns, &format!("{name}-abcde"), &name).port("http", 8080, "TCP");
        for e in 0..per_slice {
            let k = i * per_slice + e;
            sl = sl.endpoint(
                endpoint(&format!(
                    "10.{}.{}.{}",
                    128 + k / 65536,
                    (k / 256) % 256,
                    k % 256
                ))
                .pod(&format!("{name}-7d9c8b6f5-{e:05}"))
                .node(&format!("node-{}", k % 500)),
            );
        }
        objs.push(sl.build());
    }
    for p in 0..pods {
        objs.push(
            pod(
                &format!("ns-{}", p % nss),
                &format!("pod-{p}-7d9c8b6f5-xk2p9"),
            )
            .ip(&format!(
                "10.{}.{}.{}",
                200 + p / 65536,
                (p / 256) % 256,
                p % 256
            ))
            .label("app", &format!("app-{}", p % 1000))
            .build(),
        );
    }
    api.apply_many(objs).expect("apply");
    (services, services * per_slice, pods)
}

fn answer(a: SocketAddr, name: &str) -> Vec<String> {
    udp(a, &Query::new(name, RecordType::A), Duration::from_secs(2))
        .map(|r| r.answers())
        .unwrap_or_default()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn watch_event_to_answer_delay_at_scale() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api = rt.block_on(FakeApi::start()).expect("fake api");
    let (s, e, p) = fixture(&api);
    println!("fixture: {s} services, {e} endpoints, {p} pods");
    let port = free_port();
    let core = format!(
        ".:{port} {{\n  kubernetes cluster.local {{\n    endpoint {}\n    pods verified\n    startup_timeout 300s\n  }}\n}}\n",
        api.url()
    );
    let t0 = Instant::now();
    let mut srv = Sextant::start(Path::new(env!("CARGO_BIN_EXE_sextant")), &core);
    let a = SocketAddr::from(([127, 0, 0, 1], port));
    srv.wait_dns(a, Duration::from_secs(300)).unwrap();
    let probe = "svc-1.ns-1.svc.cluster.local.";
    while answer(a, probe).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(300), "never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "sextant synced and answering after {:.2} s",
        t0.elapsed().as_secs_f64()
    );

    let n = 200;
    let mut delays = Vec::with_capacity(n);
    for k in 0..n {
        // Even: a ClusterIP service gets a new address. Odd: a new service is created.
        let (ns, name, ip) = if k % 2 == 0 {
            let i = 1 + 5 * k; // never a headless one (i % 5 == 0)
            (
                format!("ns-{}", i % 100),
                format!("svc-{i}"),
                format!("10.97.{}.{}", k / 256, k % 256),
            )
        } else {
            (
                format!("ns-{}", k % 100),
                format!("new-{k}"),
                format!("10.98.{}.{}", k / 256, k % 256),
            )
        };
        let qname = format!("{name}.{ns}.svc.cluster.local.");
        let want = format!("{qname} 5 IN A {ip}");
        let t = Instant::now();
        api.apply(service(&ns, &name).cluster_ip(&ip).port("http", 80, "TCP"))
            .unwrap();
        loop {
            if answer(a, &qname).contains(&want) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{qname} never changed"
            );
        }
        delays.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    delays.sort_by(f64::total_cmp);
    println!(
        "watch event -> UDP answer over {n} changes: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&delays, 0.5),
        pct(&delays, 0.9),
        pct(&delays, 0.99),
        delays[delays.len() - 1]
    );
    let _ = srv.kill();
}
