//! End-to-end tests of the `trace` plugin: the real binary answers real UDP/TCP queries on
//! loopback and sends its spans to a collector in Python (tests/trace_receiver.py) that decodes
//! the wire format independently — Zipkin v2 JSON, Datadog msgpack with the `msgpack` package.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sextant_testkit::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

/// The Python collector; what it received, one decoded request per entry.
struct Receiver {
    child: Child,
    port: u16,
    got: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::start_with(&[])
    }

    /// With `tls` (certificate and key files), over HTTPS.
    fn start_with(tls: &[&Path]) -> Receiver {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/trace_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .args(tls)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        match lines.next() {
            Some(Ok(l)) if l == "listening" => {}
            other => {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
                panic!(
                    "the trace receiver did not start ({other:?}): {err}\n(its Python packages: python3 -m pip install -r requirements-test.txt)"
                );
            }
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                g.lock().unwrap().push(serde_json::from_str(&l).unwrap());
            }
        });
        Receiver { child, port, got }
    }

    /// Every span received so far (Zipkin: the arrays; Datadog: the traces' spans).
    fn spans(&self) -> Vec<Value> {
        let got = self.got.lock().unwrap();
        let mut out = Vec::new();
        for r in got.iter() {
            for item in r["body"].as_array().unwrap() {
                match item {
                    Value::Array(trace) => out.extend(trace.iter().cloned()),
                    span => out.push(span.clone()),
                }
            }
        }
        out
    }

    fn requests(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` spans named `name` came (at most 10 s).
    fn wait_spans(&self, name: &str, n: usize) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let spans = self.spans();
            if spans.iter().filter(|s| s["name"] == name).count() >= n {
                return spans;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{n} '{name}' spans did not come: {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn a_upstream() -> Upstream {
    Upstream::start(|req: &UpstreamRequest| {
        req.reply()
            .answer(&format!("{} 60 IN A 192.0.2.7", req.name()))
            .action()
    })
    .unwrap()
}

fn start(cf: &str, dns: u16) -> (Sextant, SocketAddr) {
    let mut s = Sextant::start(bin(), cf);
    let addr = SocketAddr::from(([127, 0, 0, 1], dns));
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    (s, addr)
}

fn forwarded_a(r: &Reply, name: &str) {
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,rd"); // the upstream sets no RA
    assert_eq!(r.answers(), vec![format!("{name} 60 IN A 192.0.2.7")]);
}

#[test]
fn zipkin_spans_per_plugin_nested_with_tags() {
    let rx = Receiver::start();
    let up = a_upstream();
    let dns = free_port();
    // `wait_dns`'s probe is the first query: with `every 1` it is traced too.
    let cf = format!(
        ".:{dns} {{\n    bind 127.0.0.1\n    metadata\n    trace zipkin 127.0.0.1:{} {{\n        service dnstest\n        zipkin_max_batch_interval 100ms\n    }}\n    errors\n    log . \"traceid={{/trace/traceid}} {{name}}\"\n    cache\n    forward . {}\n}}\n",
        rx.port,
        up.addr()
    );
    let (s, addr) = start(&cf, dns);
    let r = udp(
        addr,
        &Query::new("www.example.org.", RecordType::A),
        Duration::from_secs(3),
    )
    .unwrap();
    forwarded_a(&r, "www.example.org.");
    let r = tcp(
        addr,
        &Query::new("Mixed.Example.ORG.", RecordType::A),
        Duration::from_secs(3),
    )
    .unwrap();
    // The upstream writes the owner name as it reads it (lower-case).
    forwarded_a(&r, "mixed.example.org.");
    let spans = rx.wait_spans("servedns", 3);
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| {
            s["name"] == "servedns" && s["tags"]["coredns.io/name"] != "wait-dns.testkit.invalid."
        })
        .collect();
    assert_eq!(roots.len(), 2, "{spans:#?}");
    for (root, proto, name) in [
        (roots[0], "udp", "www.example.org."),
        (roots[1], "tcp", "mixed.example.org."),
    ] {
        assert_eq!(root["kind"], "SERVER");
        assert_eq!(
            root["id"], root["traceId"],
            "the root span's id is the trace id"
        );
        assert!(root.get("parentId").is_none());
        assert_eq!(root["traceId"].as_str().unwrap().len(), 16);
        assert_eq!(
            root["localEndpoint"],
            serde_json::json!({"serviceName": "dnstest", "ipv4": "127.0.0.1", "port": dns})
        );
        assert_eq!(
            root["tags"],
            serde_json::json!({
                "coredns.io/name": name,
                "coredns.io/type": "A",
                "coredns.io/proto": proto,
                "coredns.io/remote": "127.0.0.1",
                "coredns.io/rcode": "NOERROR",
            })
        );
        assert!(root["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000);
        // The chain after trace, each plugin a child of the one that called it.
        let trace = root["traceId"].clone();
        let mine: Vec<&Value> = spans.iter().filter(|s| s["traceId"] == trace).collect();
        let names: Vec<&str> = mine.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["connect", "forward", "cache", "log", "errors", "servedns"],
            "spans in the order they finished: {mine:#?}"
        );
        let mut parent = root["id"].clone();
        for n in ["errors", "log", "cache", "forward", "connect"] {
            let s = mine.iter().find(|s| s["name"] == n).unwrap();
            assert_eq!(s["parentId"], parent, "{n}: {mine:#?}");
            assert!(s.get("kind").is_none());
            assert!(s["duration"].as_u64().unwrap() <= root["duration"].as_u64().unwrap());
            parent = s["id"].clone();
        }
        let connect = mine.iter().find(|s| s["name"] == "connect").unwrap();
        assert_eq!(
            connect["tags"],
            serde_json::json!({"peer.address": up.addr().to_string()})
        );
        // The trace id is the `trace/traceid` metadata the log line shows.
        s.wait_for_line(
            &format!("traceid={} {name}", trace.as_str().unwrap()),
            Duration::from_secs(5),
        )
        .unwrap();
    }
    let req = &rx.requests()[0];
    assert_eq!(req["path"], "/api/v2/spans");
    assert_eq!(req["headers"]["content-type"], "application/json");
    assert_eq!(req["headers"]["b3"], "0");
    drop(s);
}

#[test]
fn zipkin_every_samples_one_in_n_and_marks_errors() {
    let rx = Receiver::start();
    let dead = Upstream::start(|_: &UpstreamRequest| Action::Drop).unwrap();
    let dead_addr = dead.addr();
    drop(dead); // nothing listens there now: the exchange fails at once
    let up = a_upstream();
    let dns = free_port();
    let cf = format!(
        ".:{dns} {{\n    trace http://127.0.0.1:{}/api/v2/spans {{\n        every 3\n        zipkin_max_batch_interval 100ms\n    }}\n    forward . {}\n}}\nbroken.example:{dns} {{\n    trace 127.0.0.1:{} {{\n        zipkin_max_batch_interval 100ms\n    }}\n    forward . {dead_addr} {{\n        max_fails 0\n    }}\n}}\n",
        rx.port,
        up.addr(),
        rx.port
    );
    // wait_dns's probe is query 1 of the root block.
    let (s, addr) = start(&cf, dns);
    for i in 2..=10 {
        let name = format!("q{i}.example.org.");
        let r = udp(
            addr,
            &Query::new(&name, RecordType::A),
            Duration::from_secs(3),
        )
        .unwrap();
        forwarded_a(&r, &name);
    }
    // Queries 3, 6 and 9 are traced.
    let spans = rx.wait_spans("servedns", 3);
    std::thread::sleep(Duration::from_millis(400));
    let spans_later = rx.spans();
    let mut traced: Vec<String> = spans_later
        .iter()
        .filter(|s| s["name"] == "servedns")
        .map(|s| s["tags"]["coredns.io/name"].as_str().unwrap().to_string())
        .collect();
    traced.sort();
    assert_eq!(
        traced,
        ["q3.example.org.", "q6.example.org.", "q9.example.org."],
        "{spans:#?}"
    );
    // An upstream that fails: SERVFAIL to the client, the error on the root span.
    let r = udp(
        addr,
        &Query::new("x.broken.example.", RecordType::A),
        Duration::from_secs(8),
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "SERVFAIL");
    assert_eq!(r.answers().len(), 0);
    let spans = rx.wait_spans("servedns", 4);
    let root = spans
        .iter()
        .find(|s| s["tags"]["coredns.io/name"] == "x.broken.example.")
        .unwrap();
    assert_eq!(root["tags"]["coredns.io/rcode"], "SERVFAIL");
    assert_eq!(root["tags"]["error"], "true");
    let notes: Vec<&str> = root["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["value"].as_str().unwrap())
        .collect();
    assert_eq!(notes[0], "event:error");
    assert!(notes[1].starts_with("error.object:"), "{notes:?}");
    let connects = spans
        .iter()
        .filter(|s| s["traceId"] == root["traceId"] && s["name"] == "connect")
        .count();
    assert!(connects >= 1, "{spans:#?}");
    drop(s);
}

#[test]
fn zipkin_over_https_verified_against_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    let rx = Receiver::start_with(&[&cert, &key]);
    let dns = free_port();
    let cf = format!(
        ".:{dns} {{\n    trace https://localhost:{}/api/v2/spans {{\n        zipkin_max_batch_interval 100ms\n    }}\n    whoami\n}}\n",
        rx.port
    );
    // The self-signed certificate is the only trusted root (rustls-native-certs reads
    // SSL_CERT_FILE).
    let mut s = Sextant::builder(bin(), &cf)
        .env("SSL_CERT_FILE", &cert)
        .start();
    let addr = SocketAddr::from(([127, 0, 0, 1], dns));
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    let r = udp(
        addr,
        &Query::new("tls.example.", RecordType::A),
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    let spans = rx.wait_spans("servedns", 2);
    assert!(
        spans
            .iter()
            .any(|s| s["tags"]["coredns.io/name"] == "tls.example."),
        "{spans:#?}"
    );
    assert!(spans.iter().any(|s| s["name"] == "whoami"), "{spans:#?}");
    drop(s);
    // Without that root the certificate is refused: the error is logged, nothing is sent.
    let before = rx.requests().len();
    let mut s = Sextant::start(bin(), &cf);
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    s.wait_for_line(
        "[ERROR] plugin/trace: failed to send the request: TLS handshake",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(rx.requests().len(), before);
    drop(s);
}

#[test]
fn datadog_msgpack_traces_to_the_agent() {
    let rx = Receiver::start();
    let dns = free_port();
    let cf = format!(
        ".:{dns} {{\n    trace datadog 127.0.0.1:{} {{\n        every 2\n        service ddtest\n        datadog_analytics_rate 0.5\n    }}\n    errors\n    whoami\n}}\n",
        rx.port
    );
    // wait_dns's probe is query 1; then 2..=5: 2 and 4 are traced.
    let (s, addr) = start(&cf, dns);
    for i in 2..=5 {
        let name = format!("d{i}.example.org.");
        let r = udp(
            addr,
            &Query::new(&name, RecordType::AAAA),
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(r.additional().len(), 2);
    }
    let spans = rx.wait_spans("servedns", 2);
    std::thread::sleep(Duration::from_millis(300));
    let spans = {
        let later = rx.spans();
        assert_eq!(later.len(), spans.len().max(2), "{later:#?}");
        later
    };
    // Datadog gets the query's span only, as CoreDNS (dd-trace-go spans are not OpenTracing's).
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let mut names = Vec::new();
    for sp in &spans {
        assert_eq!(sp["name"], "servedns");
        assert_eq!(sp["resource"], "servedns");
        assert_eq!(sp["service"], "ddtest");
        assert_eq!(sp["type"], "");
        assert_eq!(sp["span_id"], sp["trace_id"]);
        assert_eq!(sp["parent_id"], 0);
        assert_eq!(sp["error"], 0);
        assert!(sp["start"].as_i64().unwrap() > 1_600_000_000_000_000_000);
        assert!(sp["duration"].as_i64().unwrap() > 0);
        let meta = &sp["meta"];
        assert_eq!(meta["coredns.io@type"], "AAAA");
        assert_eq!(meta["coredns.io@proto"], "udp");
        assert_eq!(meta["coredns.io@remote"], "127.0.0.1");
        assert_eq!(meta["coredns.io@rcode"], "NOERROR");
        assert_eq!(meta["dns"], "true");
        assert_eq!(sp["metrics"]["_sampling_priority_v1"], 1.0);
        names.push(meta["coredns.io@name"].as_str().unwrap().to_string());
    }
    names.sort();
    assert_eq!(names, ["d2.example.org.", "d4.example.org."]);
    let reqs = rx.requests();
    let count: usize = reqs
        .iter()
        .map(|r| {
            r["headers"]["x-datadog-trace-count"]
                .as_str()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(count, 2);
    for r in &reqs {
        assert_eq!(r["path"], "/v0.4/traces");
        assert_eq!(r["headers"]["content-type"], "application/msgpack");
    }
    drop(s);
}

#[test]
fn a_collector_that_never_answers_does_not_slow_queries() {
    // Accepts connections and reads nothing: every POST waits for its 5 s limit.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for c in hang.incoming().map_while(Result::ok) {
            h.lock().unwrap().push(c);
        }
    });
    let dns = free_port();
    let cf = format!(
        ".:{dns} {{\n    trace 127.0.0.1:{port} {{\n        zipkin_max_batch_size 1\n        zipkin_max_backlog_size 5\n    }}\n    whoami\n}}\n"
    );
    let (s, addr) = start(&cf, dns);
    let t0 = Instant::now();
    for i in 0..200 {
        let r = udp(
            addr,
            &Query::new(&format!("h{i}.example."), RecordType::A),
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(r.rcode_name(), "NOERROR");
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "200 traced queries took {took:?}"
    );
    assert!(
        !held.lock().unwrap().is_empty(),
        "the collector was never called"
    );
    drop(s);
}

/// A DoH GET of `name` A with curl over HTTP/2, with extra headers; its HTTP status.
fn doh_get(port: u16, ca: &Path, name: &str, headers: &[&str]) -> u16 {
    use base64::Engine;
    let q = Query::new(name, RecordType::A).id(0).to_bytes();
    let url = format!(
        "https://localhost:{port}/dns-query?dns={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(q)
    );
    let resolve = format!("localhost:{port}:127.0.0.1");
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
    ])
    .args(["--http2", "--resolve", &resolve, "--cacert"])
    .arg(ca);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("curl runs (apt-get install curl)");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// The spans of the trace with id `trace` (waits until its `servedns` span came).
fn trace_spans(rx: &Receiver, trace: &str) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let spans: Vec<Value> = rx
            .spans()
            .into_iter()
            .filter(|s| s["traceId"] == trace)
            .collect();
        if spans.iter().any(|s| s["name"] == "servedns") {
            return spans;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "trace {trace} did not come: {:#?}",
            rx.spans()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A DoH client's B3 headers (CoreDNS reads them from the HTTP request): the trace is joined,
/// as a child of the client's span, or with `client_server` as the server side of that span
/// (`shared`); the client's sampling decision and debug flag hold. Checked against CoreDNS
/// 1.14.7's spans for the same requests.
#[test]
fn zipkin_joins_a_doh_clients_b3_trace() {
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    let rx = Receiver::start();
    let (child, shared, dns) = (free_port(), free_port(), free_port());
    let block = |port: u16, opt: &str| {
        format!(
            "https://.:{port} {{\n    bind 127.0.0.1\n    tls {} {}\n    trace 127.0.0.1:{} {{\n        zipkin_max_batch_interval 100ms\n{opt}    }}\n    whoami\n}}\n",
            cert.display(),
            key.display(),
            rx.port
        )
    };
    let cf = format!(
        "{}{}.:{dns} {{\n    bind 127.0.0.1\n    whoami\n}}\n",
        block(child, ""),
        block(shared, "        client_server\n")
    );
    let (s, _) = start(&cf, dns);
    s.wait_for_line(&format!("https://.:{shared}"), Duration::from_secs(5))
        .unwrap();
    let multi = [
        "X-B3-TraceId: 463ac35c9f6413ad48485a3953bb6124",
        "X-B3-SpanId: a2fb4a1d1a96d312",
        "X-B3-ParentSpanId: 0020000000000001",
        "X-B3-Sampled: 1",
    ];
    assert_eq!(doh_get(child, &cert, "one.example.", &multi), 200);
    let spans = trace_spans(&rx, "463ac35c9f6413ad48485a3953bb6124");
    let root = spans.iter().find(|s| s["name"] == "servedns").unwrap();
    assert_eq!(root["parentId"], "a2fb4a1d1a96d312", "{spans:#?}");
    assert_ne!(root["id"], "a2fb4a1d1a96d312");
    assert_eq!(root["kind"], "SERVER");
    assert_eq!(root["tags"]["coredns.io/proto"], "tcp");
    assert!(root.get("shared").is_none() && root.get("debug").is_none());
    let whoami = spans.iter().find(|s| s["name"] == "whoami").unwrap();
    assert_eq!(whoami["parentId"], root["id"]);

    // client_server: the same span, shared; its parent is the client span's parent.
    assert_eq!(doh_get(shared, &cert, "two.example.", &multi), 200);
    let t0 = Instant::now();
    let root = loop {
        let got = rx
            .spans()
            .into_iter()
            .find(|s| s["name"] == "servedns" && s["tags"]["coredns.io/name"] == "two.example.");
        if let Some(r) = got {
            break r;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{:#?}", rx.spans());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(root["traceId"], "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(
        (&root["id"], &root["parentId"], &root["shared"]),
        (
            &Value::from("a2fb4a1d1a96d312"),
            &Value::from("0020000000000001"),
            &Value::from(true)
        )
    );

    // The single `b3` header, debug: every span of the trace says so.
    let single = ["b3: 80f198ee56343ba8-e457b5a2e4d86bd1-d"];
    assert_eq!(doh_get(child, &cert, "three.example.", &single), 200);
    let spans = trace_spans(&rx, "80f198ee56343ba8");
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans.iter().all(|s| s["debug"] == true), "{spans:#?}");
    let root = spans.iter().find(|s| s["name"] == "servedns").unwrap();
    assert_eq!(root["parentId"], "e457b5a2e4d86bd1");

    // Not sampled by the client (either form): nothing is sent. A broken context: a trace of
    // its own. X-B3-Flags alone: a trace of its own, debug.
    for h in ["b3: 80f198ee56343ba8-e457b5a2e4d86bd2-0", "X-B3-Sampled: 0"] {
        assert_eq!(doh_get(child, &cert, "unsampled.example.", &[h]), 200);
    }
    assert_eq!(
        doh_get(
            child,
            &cert,
            "broken.example.",
            &["X-B3-TraceId: zz", "X-B3-SpanId: a2fb4a1d1a96d312"]
        ),
        200
    );
    assert_eq!(
        doh_get(child, &cert, "flags.example.", &["X-B3-Flags: 1"]),
        200
    );
    let by_name = |name: &str| -> Vec<Value> {
        rx.spans()
            .into_iter()
            .filter(|s| s["name"] == "servedns" && s["tags"]["coredns.io/name"] == name)
            .collect()
    };
    let t0 = Instant::now();
    while by_name("flags.example.").is_empty() || by_name("broken.example.").is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{:#?}", rx.spans());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Sent in order, one batch interval apart at most: the unsampled ones would be there.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        by_name("unsampled.example.").is_empty(),
        "{:#?}",
        rx.spans()
    );
    let broken = &by_name("broken.example.")[0];
    assert!(broken.get("parentId").is_none() && broken.get("debug").is_none());
    assert_eq!(broken["traceId"], broken["id"]);
    let flags = &by_name("flags.example.")[0];
    assert!(flags.get("parentId").is_none());
    assert_eq!(flags["debug"], true);
    drop(s);
}
