//! Unit tests of the `trace` plugin's Corefile parsing.

use super::*;
use crate::pkg::testing::with_named;

fn cfg(text: &str) -> Result<Config, String> {
    with_named(text, "trace", parse).map_err(|e| e.to_string())
}

fn ok(body: &str) -> Config {
    cfg(&format!(". {{\n{body}\n}}\n")).unwrap()
}

fn err(body: &str) -> String {
    cfg(&format!(". {{\n{body}\n}}\n")).unwrap_err()
}

#[test]
fn endpoints_and_defaults() {
    let c = ok("trace");
    assert_eq!(
        c.endpoint,
        Endpoint::Zipkin("http://localhost:9411/api/v2/spans".into())
    );
    assert_eq!((c.every, c.service.as_str()), (1, "coredns"));
    assert_eq!(
        (c.backlog, c.batch, c.interval),
        (1000, 100, Duration::from_secs(1))
    );
    assert_eq!(
        ok("trace tracinghost:9253").endpoint,
        Endpoint::Zipkin("http://tracinghost:9253/api/v2/spans".into())
    );
    assert_eq!(
        ok("trace zipkin tracinghost:9253").endpoint,
        Endpoint::Zipkin("http://tracinghost:9253/api/v2/spans".into())
    );
    assert_eq!(
        ok("trace http://tracinghost:9411/zipkin/api/v2/spans").endpoint,
        Endpoint::Zipkin("http://tracinghost:9411/zipkin/api/v2/spans".into())
    );
    let d = ok("trace DataDog localhost:8126");
    assert_eq!(d.endpoint, Endpoint::Datadog("localhost:8126".into()));
    assert_eq!(d.interval, Duration::from_secs(2));
}

#[test]
fn options() {
    let c = ok("trace tracinghost:9411 {\n every 10000\n service dnsproxy\n client_server\n}");
    assert_eq!(
        (c.every, c.service.as_str(), c.client_server),
        (10000, "dnsproxy", true)
    );
    assert!(!ok("trace {\n client_server false\n}").client_server);
    let c = ok("trace datadog localhost:8126 {\n datadog_analytics_rate 0.5\n}");
    assert_eq!(c.analytics_rate, 0.5);
    let c = ok(
        "trace {\n zipkin_max_backlog_size 10\n zipkin_max_batch_size 5\n zipkin_max_batch_interval 50ms\n}",
    );
    assert_eq!(
        (c.backlog, c.batch, c.interval),
        (10, 5, Duration::from_millis(50))
    );
    // Two lines: one tracer, the last endpoint, the options of both.
    let c = ok("trace a:1 {\n every 3\n}\ntrace datadog b:2 {\n service s\n}");
    assert_eq!(c.endpoint, Endpoint::Datadog("b:2".into()));
    assert_eq!((c.every, c.service.as_str()), (3, "s"));
}

#[test]
fn errors_name_the_place() {
    assert_eq!(
        err("trace jaeger x:1"),
        "Corefile:2:1: trace: tracing endpoint type 'jaeger' is not supported"
    );
    assert_eq!(
        err("trace a b c"),
        "Corefile:2:11: trace: wrong argument count: expected 0 to 2, got 3"
    );
    assert!(err("trace {\n every x\n}").contains("invalid number 'x'"));
    assert!(err("trace {\n every\n}").contains("wrong argument count"));
    assert!(err("trace {\n client_server maybe\n}").contains("strconv.ParseBool"));
    assert_eq!(
        err("trace datadog {\n datadog_analytics_rate 2\n}"),
        "Corefile:3:25: datadog_analytics_rate: datadog analytics rate must be between 0 and 1, '2.000000' is not supported"
    );
    assert!(err("trace {\n zipkin_max_batch_size x\n}").contains("strconv.Atoi"));
    assert!(err("trace {\n zipkin_max_batch_interval 1x\n}").contains("zipkin_max_batch_interval"));
    assert!(err("trace {\n nope\n}").contains("unknown property 'nope'"));
    assert!(err("trace httpx://h/api/v2/spans").contains("scheme 'httpx' is not supported"));
}
