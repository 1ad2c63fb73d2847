//! End-to-end tests of the server core (issue 2): the real binary from Corefile strings, queried
//! over real UDP and TCP sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start(corefile: &str, port: u16) -> Sextant {
    let mut s = Sextant::start(bin(), corefile);
    s.wait_dns(addr(port), Duration::from_secs(10))
        .expect("server answers");
    s
}

#[test]
fn whoami_full_answer_over_udp_and_tcp() {
    let port = free_port();
    let _s = start(&format!(".:{port} {{\n    whoami\n}}\n"), port);
    let q = Query::new("Example.ORG.", RecordType::A).id(4660);
    let r = udp(addr(port), &q, T).unwrap();
    assert_eq!(r.id(), 4660);
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa,rd");
    assert_eq!(r.question().unwrap(), "Example.ORG. IN A");
    assert!(r.answers().is_empty());
    assert!(r.authority().is_empty());
    let add = r.additional();
    assert_eq!(add.len(), 2, "{add:?}");
    assert_eq!(add[0], "Example.ORG. 0 IN A 127.0.0.1");
    assert!(
        add[1].starts_with("_udp.Example.ORG. 0 IN SRV 0 0 "),
        "{}",
        add[1]
    );
    assert!(add[1].ends_with(" ."), "{}", add[1]);
    assert!(r.edns().is_none(), "no OPT when the query had none");

    let r = tcp(addr(port), &q, T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.additional()[1].starts_with("_tcp.Example.ORG. 0 IN SRV 0 0 "));
}

#[test]
fn routing_longest_zone_wins_and_refused_without_match() {
    let port = free_port();
    let cf = format!(
        "example.org:{port} {{\n    whoami\n}}\nsub.example.org:{port} {{\n    any\n    whoami\n}}\n"
    );
    let _s = start(&cf, port);
    let a = addr(port);
    // Under sub.example.org: the block with `any` answers ANY with HINFO.
    let r = udp(a, &Query::new("x.SUB.example.org.", RecordType::ANY), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(
        r.answers(),
        vec!["x.SUB.example.org. 8482 IN HINFO ANY obsoleted See RFC 8482"]
    );
    // Elsewhere in example.org: whoami's block, no HINFO.
    let r = udp(a, &Query::new("x.example.org.", RecordType::ANY), T).unwrap();
    assert!(r.answers().is_empty());
    assert_eq!(r.additional().len(), 2);
    // No block: REFUSED, over UDP and TCP.
    for r in [
        udp(a, &Query::new("example.com.", RecordType::A), T).unwrap(),
        tcp(a, &Query::new("example.com.", RecordType::A), T).unwrap(),
    ] {
        assert_eq!(r.rcode_name(), "REFUSED");
        assert_eq!(r.flags(), "qr,rd");
        assert!(r.answers().is_empty() && r.additional().is_empty());
    }
}

#[test]
fn edns_echo_badvers_and_two_opts() {
    let port = free_port();
    let _s = start(&format!(".:{port} {{\n    whoami\n}}\n"), port);
    let a = addr(port);
    let r = udp(
        a,
        &Query::new("example.org.", RecordType::A)
            .edns(4096)
            .do_bit(),
        T,
    )
    .unwrap();
    // CoreDNS's SizeAndDo: the client's size and DO.
    let e = r.edns().expect("OPT echoed");
    assert_eq!(
        (e.udp_size, e.version, e.do_bit, e.z, e.opt_count),
        (4096, 0, true, 0, 1)
    );
    assert!(e.options.is_empty());
    // An unknown option is not echoed; NSID and COOKIE are (CoreDNS's supported options), and
    // the upper seven Z bits stay as the client sent them (CoreDNS masks the TTL with 0xff00).
    let r = udp(
        a,
        &Query::new("example.org.", RecordType::A)
            .edns(1232)
            .edns_z(0x7fff)
            .edns_option(100, b"xyz")
            .edns_option(10, b"12345678")
            .edns_option(3, b""),
        T,
    )
    .unwrap();
    let e = r.edns().unwrap();
    assert_eq!(e.options, vec![(10, b"12345678".to_vec()), (3, Vec::new())]);
    assert_eq!((e.udp_size, e.z), (1232, 0x7f00));
    // Version 1: BADVERS, OPT version 0.
    let r = udp(
        a,
        &Query::new("example.org.", RecordType::A)
            .edns(1232)
            .edns_version(1),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "BADVERS");
    let e = r.edns().unwrap();
    // CoreDNS's edns.Version: a fresh OPT record, size 0.
    assert_eq!((e.version, e.ext_rcode, e.udp_size), (0, 1, 0));
    assert!(r.answers().is_empty() && r.additional().is_empty());
    // Two OPT records: FORMERR.
    let mut w = Query::new("example.org.", RecordType::A)
        .edns(1232)
        .to_bytes();
    w.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    w[11] = 2;
    let r = Reply::parse(udp_raw(a, &w, T).unwrap().expect("a reply")).unwrap();
    assert_eq!(r.rcode_name(), "FORMERR");
}

/// A `chaos` block whose authors.bind answer is ~3.5 KB.
fn big_answer_corefile(port: u16) -> String {
    let authors: Vec<String> = (0..100).map(|i| format!("author-number-{i:03}")).collect();
    format!(
        ".:{port} {{\n    chaos Sextant-test {}\n}}\n",
        authors.join(" ")
    )
}

#[test]
fn truncation_at_512_and_at_client_size_and_full_over_tcp() {
    let port = free_port();
    let _s = start(&big_answer_corefile(port), port);
    let a = addr(port);
    let q = Query::new("authors.bind.", RecordType::TXT).class(3);
    // CoreDNS 1.14.7 (miekg/dns Truncate) keeps the records that fit: 16 of 100 in 510
    // bytes; 31 for EDNS 1000. For EDNS 4096 CoreDNS sends all 100 (3053 bytes); Sextant caps
    // UDP replies at 1232 bytes (docs/replies.md) and keeps the 40 that fit.
    let r = udp(a, &q, T).unwrap();
    assert_eq!(r.len(), 510);
    assert!(r.truncated());
    assert_eq!(r.answers().len(), 16);
    assert!(r.answers()[0].starts_with("authors.bind. 0 CH TXT author-number-000"));
    let r = udp(a, &q.clone().edns(1000), T).unwrap();
    assert!(r.len() <= 1000 && r.truncated());
    assert_eq!(r.answers().len(), 31);
    assert_eq!(r.edns().unwrap().udp_size, 1000);
    let r = udp(a, &q.clone().edns(4096), T).unwrap();
    assert!(r.len() <= 1232 && r.truncated(), "capped at 1232");
    assert_eq!(r.answers().len(), (1232 - 30 - 11) / 30);
    assert_eq!(
        r.edns().unwrap().udp_size,
        4096,
        "the client's size in the OPT record"
    );
    let r = tcp(a, &q, T).unwrap();
    assert!(!r.truncated());
    assert_eq!(r.answers().len(), 100);
    assert!(r.answers()[0].starts_with("authors.bind. 0 CH TXT author-number-000"));
    // Small answers are not truncated.
    let r = udp(a, &Query::new("version.bind.", RecordType::TXT).class(3), T).unwrap();
    assert!(!r.truncated());
    assert_eq!(r.answers(), vec!["version.bind. 0 CH TXT Sextant-test"]);
}

#[test]
fn tcp_pipelining_answers_every_query_on_one_connection() {
    let port = free_port();
    let _s = start(&format!(".:{port} {{\n    whoami\n}}\n"), port);
    let mut c = TcpConn::connect(addr(port), T).unwrap();
    let mut ids = Vec::new();
    for i in 0..50u16 {
        let q = Query::new(&format!("q{i}.example.org."), RecordType::A).id(1000 + i);
        c.send_query(&q).unwrap();
        ids.push(1000 + i);
    }
    let mut got = Vec::new();
    for _ in 0..50 {
        let r = c.recv_reply(T).unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
        let n = r.id() - 1000;
        assert_eq!(r.question().unwrap(), format!("q{n}.example.org. IN A"));
        got.push(r.id());
    }
    got.sort();
    assert_eq!(got, ids);
    // The connection is reusable afterwards (RFC 7766 §6.2.1).
    for i in 0..100u16 {
        c.send_query(&Query::new("again.example.org.", RecordType::A).id(i))
            .unwrap();
        assert_eq!(c.recv_reply(T).unwrap().id(), i);
    }
}

#[test]
fn tcp_length_prefix_split_across_segments() {
    let port = free_port();
    let _s = start(&format!(".:{port} {{\n    whoami\n}}\n"), port);
    let mut c = TcpConn::connect(addr(port), T).unwrap();
    let q = Query::new("split.example.org.", RecordType::A)
        .id(77)
        .to_bytes();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    for b in &framed {
        c.send_raw(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.recv_reply(T).unwrap().id(), 77);
}

#[test]
fn formerr_notimp_and_responses_ignored() {
    let port = free_port();
    let _s = start(&format!(".:{port} {{\n    whoami\n}}\n"), port);
    let a = addr(port);
    // Garbage shorter than a header: dropped.
    assert!(udp_raw(a, &[1u8, 2, 3], Duration::from_millis(300))
        .unwrap()
        .is_none());
    // Label type 0x40: FORMERR with the ID kept.
    let w = [
        0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 1, 0, 1,
    ];
    let r = Reply::parse(udp_raw(a, &w, T).unwrap().expect("reply")).unwrap();
    assert_eq!((r.id(), r.rcode_name()), (0x1234, "FORMERR".to_string()));
    // QDCOUNT 2: FORMERR.
    let mut w = Query::new("a.example.", RecordType::A).to_bytes();
    w[5] = 2;
    let q2 = Query::new("b.example.", RecordType::A).to_bytes();
    w.extend_from_slice(&q2[12..]);
    let r = Reply::parse(udp_raw(a, &w, T).unwrap().expect("reply")).unwrap();
    assert_eq!(r.rcode_name(), "FORMERR");
    // Opcodes other than QUERY and NOTIFY: NOTIMP, opcode echoed, no RD/AA.
    for op in [1u8, 2, 5, 6, 15] {
        let r = udp(
            a,
            &Query::new("example.org.", RecordType::SOA).opcode(op),
            T,
        )
        .unwrap();
        assert_eq!(r.rcode_name(), "NOTIMP", "opcode {op}");
        assert_eq!(r.opcode(), op);
        assert_eq!(r.flags(), "qr");
    }
    // QR=1: never answered.
    let mut w = Query::new("example.org.", RecordType::A).to_bytes();
    w[2] |= 0x80;
    assert!(udp_raw(a, &w, Duration::from_millis(300))
        .unwrap()
        .is_none());
    // Class HS without chaos: REFUSED.
    let r = udp(a, &Query::new("example.org.", RecordType::A).class(4), T).unwrap();
    assert_eq!(r.rcode_name(), "REFUSED");
    // Still alive and correct.
    assert_eq!(
        udp(a, &Query::new("ok.example.", RecordType::A), T)
            .unwrap()
            .rcode_name(),
        "NOERROR"
    );
}

#[test]
fn log_line_matches_coredns_format_byte_for_byte() {
    let port = free_port();
    let s = start(&format!(".:{port} {{\n    log\n    whoami\n}}\n"), port);
    let q = Query::new("MyService.MyNamespace.svc.cluster.local.", RecordType::A)
        .id(8284)
        .edns(1232);
    let r = udp(addr(port), &q, T).unwrap();
    let line = s.wait_for_line("\"A IN myservice", T).unwrap();
    // `[INFO] 127.0.0.1:36694 - 8284 "A IN name. udp 68 false 1232" NOERROR qr,aa,rd 143 0.000289493s`
    let re = regex::Regex::new(
        r#"^\[INFO\] 127\.0\.0\.1:(\d+) - 8284 "A IN myservice\.mynamespace\.svc\.cluster\.local\. udp (\d+) false 1232" NOERROR qr,aa,rd (\d+) (\d+\.\d+)s$"#,
    )
    .unwrap();
    let line = line
        .split_once("] [INFO]")
        .map(|(_, l)| format!("[INFO]{l}"))
        .unwrap_or(line);
    let caps = re
        .captures(&line)
        .unwrap_or_else(|| panic!("line does not match: {line:?}"));
    assert_eq!(caps[2].parse::<usize>().unwrap(), q.to_bytes().len());
    // rsize is the uncompressed length (miekg Len() without compression).
    // Like CoreDNS, the log records the reply as the plugin wrote it, before the server adds
    // its OPT record.
    let uncompressed = 12 + (41 + 4) + (41 + 10 + 4) + (5 + 41 + 10 + 7);
    assert_eq!(
        caps[3].parse::<usize>().unwrap(),
        uncompressed,
        "reply on wire was {}",
        r.len()
    );
    // A TCP query logs tcp and bufsize 65535; NOTIMP-free classes keep logging.
    tcp(
        addr(port),
        &Query::new("t.example.", RecordType::AAAA).id(9),
        T,
    )
    .unwrap();
    let line = s.wait_for_line("\"AAAA IN t.example. tcp", T).unwrap();
    assert!(
        line.contains(" - 9 \"AAAA IN t.example. tcp 27 false 65535\" NOERROR qr,aa,rd "),
        "{line}"
    );
}

#[test]
fn log_classes_filter_lines() {
    let port = free_port();
    let cf = format!(
        "example.org:{port} {{\n    log . {{\n        class denial error\n    }}\n    whoami\n}}\n"
    );
    let s = start(&cf, port);
    let a = addr(port);
    // NOERROR answers are not logged with class denial/error; a REFUSED (other zone) never
    // reaches the log plugin at all.
    udp(a, &Query::new("one.example.org.", RecordType::A), T).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.count_lines("one.example.org."), 0);
}

#[test]
fn log_lines_are_all_written_across_reload_and_sigterm() {
    // Query log lines are written in batches (src/log.rs): none may be lost or reordered when
    // the configuration is reloaded or when the server stops on SIGTERM right after answering.
    let port = free_port();
    let mut s = start(&format!(".:{port} {{\n    log\n    whoami\n}}\n"), port);
    let ask = |phase: &str| {
        for i in 0..150u16 {
            let q = Query::new(&format!("q{i}.{phase}.example."), RecordType::A).id(i);
            assert_eq!(udp(addr(port), &q, T).unwrap().rcode_name(), "NOERROR");
        }
    };
    ask("before");
    s.rewrite_corefile(&format!(
        ".:{port} {{\n    errors\n    log\n    whoami\n}}\n"
    ))
    .unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_line("Reloading complete", Duration::from_secs(10))
        .unwrap();
    ask("after");
    s.signal(libc::SIGTERM).unwrap();
    assert!(
        s.wait_exit(Duration::from_secs(10)).is_some(),
        "exits on SIGTERM"
    );
    let lines = s.lines();
    let mut want = Vec::new();
    for phase in ["before", "after"] {
        want.extend((0..150).map(|i| format!(" - {i} \"A IN q{i}.{phase}.example. udp ")));
    }
    let got: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(".example. udp "))
        .collect();
    assert_eq!(got.len(), want.len(), "query lines:\n{}", s.output());
    for (line, w) in got.iter().zip(&want) {
        assert!(
            line.contains(w.as_str()),
            "{line:?} is not {w:?} (order kept)"
        );
    }
    let reloaded = lines
        .iter()
        .position(|l| l.contains("Reloading complete"))
        .unwrap();
    let first_after = lines
        .iter()
        .position(|l| l.contains(".after.example."))
        .unwrap();
    let last_before = lines
        .iter()
        .rposition(|l| l.contains(".before.example."))
        .unwrap();
    assert!(last_before < reloaded && reloaded < first_after);
}

#[test]
fn metrics_have_coredns_names_and_labels() {
    let (port, mport) = (free_port(), free_port());
    let cf = format!(".:{port} {{\n    prometheus 127.0.0.1:{mport}\n    whoami\n}}\n");
    let _s = start(&cf, port);
    udp(
        addr(port),
        &Query::new("m.example.", RecordType::AAAA)
            .edns(1232)
            .do_bit(),
        T,
    )
    .unwrap();
    tcp(addr(port), &Query::new("m.example.", RecordType::A), T).unwrap();
    let (status, body) = http_get(addr(mport), "/metrics", T).unwrap();
    assert_eq!(status, 200);
    let server = format!("server=\"dns://:{port}\"");
    for needle in [
        format!("coredns_dns_requests_total{{family=\"1\",proto=\"udp\",{server},type=\"AAAA\",view=\"\",zone=\".\"}} "),
        format!("coredns_dns_requests_total{{family=\"1\",proto=\"tcp\",{server},type=\"A\",view=\"\",zone=\".\"}} "),
        format!("coredns_dns_responses_total{{plugin=\"whoami\",rcode=\"NOERROR\",{server},view=\"\",zone=\".\"}} "),
        format!("coredns_dns_do_requests_total{{{server},view=\"\",zone=\".\"}} 1"),
        format!("coredns_dns_request_duration_seconds_bucket{{{server},view=\"\",zone=\".\",le=\"0.00025\"}}"),
        format!("coredns_dns_request_duration_seconds_bucket{{{server},view=\"\",zone=\".\",le=\"8.192\"}}"),
        format!("coredns_dns_request_size_bytes_bucket{{proto=\"udp\",{server},view=\"\",zone=\".\",le=\"511\"}}"),
        format!("coredns_dns_response_size_bytes_bucket{{proto=\"tcp\",{server},view=\"\",zone=\".\",le=\"64000\"}}"),
        format!("coredns_plugin_enabled{{name=\"prometheus\",{server},view=\"\",zone=\".\"}} 1"),
        format!("coredns_plugin_enabled{{name=\"whoami\",{server},view=\"\",zone=\".\"}} 1"),
        "coredns_build_info{goversion=".to_string(),
        "coredns_panics_total 0".to_string(),
        "coredns_reload_failed_total 0".to_string(),
        "coredns_reload_version_info{hash=\"sha512\",value=\"".to_string(),
        "process_resident_memory_bytes ".to_string(),
        "process_open_fds ".to_string(),
    ] {
        assert!(body.contains(&needle), "missing {needle}\n{body}");
    }
}

#[test]
fn health_ready_and_lameduck_on_sigterm_lose_no_queries() {
    let (port, hp, rp) = (free_port(), free_port(), free_port());
    let cf = format!(
        ".:{port} {{\n    health 127.0.0.1:{hp} {{\n        lameduck 2s\n    }}\n    ready 127.0.0.1:{rp}\n    whoami\n}}\n"
    );
    let mut s = start(&cf, port);
    assert_eq!(
        http_get(addr(hp), "/health", T).unwrap(),
        (200, "OK".to_string())
    );
    assert_eq!(
        http_get(addr(rp), "/ready", T).unwrap(),
        (200, "OK".to_string())
    );
    // A steady stream of queries through shutdown.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let worker = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut i = 0u16;
            while !stop.load(Ordering::Relaxed) && i < 20000 {
                i = i.wrapping_add(1);
                sent.fetch_add(1, Ordering::Relaxed);
                match udp(
                    addr(port),
                    &Query::new("l.example.", RecordType::A).id(i),
                    Duration::from_millis(500),
                ) {
                    Ok(r) if r.rcode_name() == "NOERROR" => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    s.signal(libc::SIGTERM).unwrap();
    s.wait_for_line("SIGTERM: Shutting down servers then terminating", T)
        .unwrap();
    // During lameduck: ready is 503, health is 200, DNS answers.
    let (code, body) = http_get(addr(rp), "/ready", T).unwrap();
    assert_eq!((code, body.as_str()), (503, "Shutting down"));
    assert_eq!(http_get(addr(hp), "/health", T).unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let during = failed.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert_eq!(during, 0, "queries failed during lameduck");
    assert!(sent.load(Ordering::Relaxed) > 100);
    let st = s.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(st.success(), "{st:?}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "lameduck honoured: {took:?}"
    );
    assert!(
        took < Duration::from_secs(7),
        "exit within lameduck + 5 s: {took:?}"
    );
}

#[test]
fn ready_lists_plugins_not_ready_is_ok_without_any() {
    let (port, rp) = (free_port(), free_port());
    let _s = start(
        &format!(".:{port} {{\n    ready 127.0.0.1:{rp}\n    whoami\n}}\n"),
        port,
    );
    assert_eq!(
        http_get(addr(rp), "/ready", T).unwrap(),
        (200, "OK".to_string())
    );
    assert_eq!(http_get(addr(rp), "/nope", T).unwrap().0, 404);
}

fn query_stream(
    port: u16,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u16;
        while !stop.load(Ordering::Relaxed) && i < 30000 {
            i = i.wrapping_add(1);
            sent.fetch_add(1, Ordering::Relaxed);
            let q = Query::new("r.example.", RecordType::A).id(i);
            let ok = if i % 5 == 0 {
                tcp(addr(port), &q, Duration::from_millis(800)).map(|r| r.rcode_name() == "NOERROR")
            } else {
                udp(addr(port), &q, Duration::from_millis(800)).map(|r| r.rcode_name() == "NOERROR")
            };
            if !matches!(ok, Ok(true)) {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

#[test]
fn reload_applies_good_edit_and_keeps_serving_through_bad_one() {
    let (port, mport) = (free_port(), free_port());
    let good = format!(
        ".:{port} {{\n    reload 2s 1s\n    prometheus 127.0.0.1:{mport}\n    whoami\n}}\n"
    );
    let s = start(&good, port);
    s.wait_for_line("plugin/reload: Running configuration SHA512 = ", T)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (failed, sent) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let w = query_stream(port, stop.clone(), failed.clone(), sent.clone());

    // A bad edit: logged, counted, old config keeps serving.
    s.rewrite_corefile(&format!("{good}\nbogus-directive-line {{\n"))
        .unwrap();
    s.wait_for_line(
        "plugin/reload: Corefile changed but reload failed",
        Duration::from_secs(8),
    )
    .unwrap();
    let (_, metrics) = http_get(addr(mport), "/metrics", T).unwrap();
    assert!(
        metrics.contains("coredns_reload_failed_total 1"),
        "{metrics}"
    );

    // A good edit (adds `any`) is applied by polling.
    let edited = format!(".:{port} {{\n    reload 2s 1s\n    prometheus 127.0.0.1:{mport}\n    any\n    whoami\n}}\n");
    s.rewrite_corefile(&edited).unwrap();
    s.wait_for_line("Reloading complete", Duration::from_secs(8))
        .unwrap();
    let r = udp(addr(port), &Query::new("x.example.", RecordType::ANY), T).unwrap();
    assert_eq!(r.answers().len(), 1, "any is active after reload");
    // SIGUSR1 reloads at once.
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_line("SIGUSR1: Reloading", T).unwrap();
    s.wait_for_nth_line("Reloading complete", 2, T).unwrap();

    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    assert!(sent.load(Ordering::Relaxed) > 200);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no query lost across reloads"
    );
}

#[test]
fn reload_to_an_occupied_port_fails_atomically() {
    let (port, busy) = (free_port(), free_port());
    let _holder = std::net::TcpListener::bind(addr(busy)).unwrap();
    let good = format!(".:{port} {{\n    whoami\n}}\n");
    let s = start(&good, port);
    s.rewrite_corefile(&format!("{good}.:{busy} {{\n    whoami\n}}\n"))
        .unwrap();
    s.signal(libc::SIGUSR1).unwrap();
    s.wait_for_line("reload failed", T).unwrap();
    assert_eq!(
        udp(addr(port), &Query::new("a.", RecordType::A), T)
            .unwrap()
            .rcode_name(),
        "NOERROR"
    );
}

#[test]
fn check_reports_missing_plugins_by_name_and_line_and_syntax_errors() {
    let kubeadm = ".:53 {\n    errors\n    health {\n       lameduck 5s\n    }\n    ready\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n    prometheus :9153\n    forward . /etc/resolv.conf {\n       max_concurrent 1000\n    }\n    cache 30 {\n       disable success cluster.local\n       disable denial cluster.local\n    }\n    loop\n    reload\n    loadbalance\n}\n";
    let pos_re = regex::Regex::new(r"Corefile:\d+:\d+").unwrap();
    let (code, out, _) = Sextant::check(bin(), kubeadm).unwrap();
    // Every line printed names a plugin this build does not have, with its position.
    let pending = sextant_plugins_pending();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        if code == 0 {
            break;
        }
        assert!(
            pending.iter().any(|p| line.contains(&format!(
                "Unknown directive '{p}' (a CoreDNS plugin this Sextant build does not have yet)"
            ))),
            "unexpected -check output line: {line}"
        );
        assert!(pos_re.is_match(line), "{line}");
    }
    // Broken Corefiles: file:line:col and a non-zero exit.
    for (text, want) in [
        (
            ".:53 {\n    whoami\n    nosuchplugin\n}\n",
            ":3:5: nosuchplugin: Unknown directive 'nosuchplugin'",
        ),
        (".:53 {\n    whoami\n", ":"),
        (
            ".:53 {\n    reload 1s\n}\n",
            ":2:5: reload: interval value must be greater or equal to 2s",
        ),
        (
            ".:53 {\n    whoami\n    whoami\n}\n",
            ":3:5: whoami: this plugin can only be used once per Server Block",
        ),
        (
            ".:53 {\n    whoami\n}\n.:53 {\n    whoami\n}\n",
            "cannot serve dns://.:53 - it is already defined",
        ),
        (
            ".:53 {\n    health {\n        lameduck forever\n    }\n}\n",
            ":3:18: lameduck: invalid duration 'forever'",
        ),
    ] {
        let (code, out, err) = Sextant::check(bin(), text).unwrap();
        assert_ne!(code, 0, "{text}");
        let all = format!("{out}{err}");
        assert!(all.contains(want), "want {want:?} in {all:?}");
        assert!(pos_re.is_match(&all), "{all}");
    }
    let (code, out, _) = Sextant::check(bin(), ".:53 {\n    whoami\n    log\n}\n").unwrap();
    assert_eq!(code, 0, "{out}");
}

/// Names of plugins this build does not have yet, read from `-plugins` by difference.
fn sextant_plugins_pending() -> Vec<&'static str> {
    let out = std::process::Command::new(bin())
        .arg("-plugins")
        .output()
        .unwrap();
    let have = String::from_utf8_lossy(&out.stdout).to_string();
    [
        "loadbalance",
        "rewrite",
        "autopath",
        "cache",
        "tls",
        "transfer",
        "hosts",
        "kubernetes",
        "loop",
        "forward",
    ]
    .into_iter()
    .filter(|p| !have.contains(&format!("dns.{p}\n")))
    .collect()
}

#[test]
fn plugins_version_and_bad_flags() {
    let out = std::process::Command::new(bin())
        .arg("-plugins")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Server types:\n  dns\n"));
    let order: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("dns."))
        .collect();
    let pos = |n: &str| order.iter().position(|p| *p == n).unwrap_or(usize::MAX);
    assert!(pos("reload") < pos("prometheus") && pos("prometheus") < pos("errors"));
    assert!(pos("errors") < pos("log") && pos("log") < pos("whoami"));
    let out = std::process::Command::new(bin())
        .arg("-version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("CoreDNS-1.14.7"));
    let out = std::process::Command::new(bin())
        .arg("-nosuchflag")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn default_corefile_without_a_file_is_whoami_and_log() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("sextant-default-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let pid = dir.join("sextant.pid");
    let mut s = Sextant::builder(bin(), "")
        .conf_flag(false)
        .cwd(&dir)
        .arg("-dns.port")
        .arg(port.to_string())
        .arg("-pidfile")
        .arg(pid.as_os_str())
        .start();
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    let r = udp(
        addr(port),
        &Query::new("d.example.", RecordType::A).id(5),
        T,
    )
    .unwrap();
    assert_eq!(r.additional()[0], "d.example. 0 IN A 127.0.0.1");
    s.wait_for_line("\"A IN d.example. udp", T).unwrap();
    s.wait_for_line(&format!(".:{port}"), T).unwrap();
    assert_eq!(
        std::fs::read_to_string(&pid).unwrap().trim(),
        s.pid().to_string()
    );
    s.signal(libc::SIGTERM).unwrap();
    assert!(s.wait_exit(Duration::from_secs(10)).unwrap().success());
    assert!(!pid.exists(), "pidfile removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigquit_exits_at_once_and_port_in_use_is_a_clear_error() {
    let port = free_port();
    let mut s = start(&format!(".:{port} {{\n    whoami\n}}\n"), port);
    // A port held by a socket without SO_REUSEPORT fails with a clear error and a non-zero exit.
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = foreign.local_addr().unwrap().port();
    let (code, out, err) = Sextant::run_to_end(
        Sextant::builder(bin(), &format!(".:{taken} {{\n    whoami\n}}\n")),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("address already in use")
            || format!("{out}{err}").contains("Address already in use"),
        "{out}{err}"
    );
    // A second server on the first one's port starts beside it (SO_REUSEPORT on every
    // listener, as CoreDNS does), so an overlapping restart or upgrade can bind.
    let mut second = Sextant::builder(bin(), &format!(".:{port} {{\n    whoami\n}}\n")).start();
    second.wait_for_line(&format!(".:{port}"), T).unwrap();
    assert!(second.exited().is_none(), "{}", second.output());
    second.signal(libc::SIGQUIT).unwrap();
    assert!(second.wait_exit(Duration::from_secs(2)).is_some());
    let r = udp(addr(port), &Query::new("e.example.", RecordType::A), T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR", "the first one still serves");
    s.signal(libc::SIGQUIT).unwrap();
    assert!(s.wait_exit(Duration::from_secs(2)).is_some());
}

#[test]
fn bind_restricts_listeners_and_labels_metrics() {
    let (port, mport) = (free_port(), free_port());
    let cf = format!(
        ".:{port} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{mport}\n    whoami\n}}\n"
    );
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr(port), Duration::from_secs(10)).unwrap();
    s.wait_for_line(&format!(".:{port} on 127.0.0.1"), T)
        .unwrap();
    // 127.0.0.2 is loopback too, but not bound.
    assert!(udp_raw(
        SocketAddr::from(([127, 0, 0, 2], port)),
        &Query::new("a.", RecordType::A),
        Duration::from_millis(300)
    )
    .map(|r| r.is_none())
    .unwrap_or(true));
    let (_, body) = http_get(addr(mport), "/metrics", T).unwrap();
    assert!(
        body.contains(&format!("server=\"dns://127.0.0.1:{port}\"")),
        "{body}"
    );
}

#[test]
fn chaos_class_answers_only_with_chaos() {
    let port = free_port();
    let _s = start(
        &format!(".:{port} {{\n    chaos MyVersion\n    whoami\n}}\n"),
        port,
    );
    let r = udp(
        addr(port),
        &Query::new("version.bind.", RecordType::TXT).class(3),
        T,
    )
    .unwrap();
    assert_eq!(r.answers(), vec!["version.bind. 0 CH TXT MyVersion"]);
    let r = udp(
        addr(port),
        &Query::new("hostname.bind.", RecordType::TXT).class(3),
        T,
    )
    .unwrap();
    assert_eq!(r.answers().len(), 1);
}

/// The receive buffer (`rb`, bytes) of the UDP socket bound to 127.0.0.1:port, from `ss -m`.
fn udp_rcvbuf(port: u16) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-uanmH", &format!("sport = :{port}")])
        .output()
        .expect("ss (Debian package iproute2: apt-get install iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rb = text
        .split([',', '('])
        .find_map(|f| f.strip_prefix("rb")?.parse().ok());
    rb.unwrap_or_else(|| panic!("no rb in ss output: {text}"))
}

/// The value of an unlabelled metric (0 before it first counts).
fn plain_metric(mport: u16, name: &str) -> f64 {
    let (_, body) = http_get(addr(mport), "/metrics", T).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or(0.0)
}

/// A server that falls behind (here stopped by SIGSTOP while queries arrive) does not answer
/// queries that waited in its UDP receive queue longer than a second: they are dropped and
/// counted, a query sent after it resumes is answered at once, the socket's receive buffer
/// shrinks (the kernel drops the excess of an overload on arrival instead of queueing seconds
/// of work), and it grows back to its full size while queries are read as they come.
#[test]
fn udp_queries_that_waited_over_a_second_are_dropped_and_the_buffer_follows_the_pace() {
    let (port, mport) = (free_port(), free_port());
    let s = start(
        &format!(".:{port} {{\n    bind 127.0.0.1\n    multisocket 1\n    prometheus 127.0.0.1:{mport}\n    whoami\n}}\n"),
        port,
    );
    let full = udp_rcvbuf(port);
    assert!(full >= 4 << 20, "receive buffer at rest: {full}");
    let before = plain_metric(mport, "sextant_udp_stale_dropped_total");
    let old = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.signal(libc::SIGSTOP).unwrap();
    // kill() returns before every thread has stopped: wait until they all have.
    let all_stopped = || {
        std::fs::read_dir(format!("/proc/{}/task", s.pid()))
            .unwrap()
            .flatten()
            .all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                stat.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('T')
            })
    };
    let deadline = Instant::now() + T;
    while !all_stopped() {
        assert!(Instant::now() < deadline, "sextant did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    for id in 0..50u16 {
        let q = Query::new("old.example.", RecordType::A).id(id);
        old.send_to(&q.to_bytes(), addr(port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1300));
    s.signal(libc::SIGCONT).unwrap();

    let r = udp(
        addr(port),
        &Query::new("new.example.", RecordType::A).id(4242),
        T,
    )
    .unwrap();
    assert_eq!((r.id(), r.rcode_name()), (4242, "NOERROR".to_string()));
    assert_eq!(r.question().unwrap(), "new.example. IN A");
    old.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 512];
    if let Ok((n, _)) = old.recv_from(&mut buf) {
        panic!(
            "a query that waited 1.3 s was answered: {:?}",
            Reply::parse(buf[..n].to_vec())
        );
    }
    assert_eq!(
        plain_metric(mport, "sextant_udp_stale_dropped_total") - before,
        50.0
    );
    let shrunk = udp_rcvbuf(port);
    assert!(
        shrunk <= full / 4,
        "receive buffer after a 1.3 s wait: {shrunk} of {full}"
    );

    // Queries read as they come: doubling once a second back to the full size.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut id = 0u16;
    while udp_rcvbuf(port) < full {
        assert!(
            Instant::now() < deadline,
            "buffer still {} of {full}",
            udp_rcvbuf(port)
        );
        id += 1;
        let r = udp(
            addr(port),
            &Query::new("new.example.", RecordType::A).id(id),
            T,
        )
        .unwrap();
        assert_eq!(r.id(), id);
        std::thread::sleep(Duration::from_millis(100));
    }
}
