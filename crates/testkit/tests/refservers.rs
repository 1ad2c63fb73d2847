//! Knot and Unbound start, answer and are killed on drop (needs Debian's knot and unbound).

use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);

const ZONE: &str = "$TTL 300
@   IN SOA ns hostmaster 1 7200 1800 86400 30
@   IN NS  ns
ns  IN A   192.0.2.53
www IN A   192.0.2.80
";

#[test]
fn knot_serves_zone_and_unbound_forwards_to_it() {
    let knot = Knot::start("example.test.", ZONE).unwrap();
    let r = udp(
        knot.addr(),
        &Query::new("www.example.test.", RecordType::A).rd(false),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert_eq!(r.flags(), "qr,aa");
    assert_eq!(r.answers(), vec!["www.example.test. 300 IN A 192.0.2.80"]);
    let r = tcp(
        knot.addr(),
        &Query::new("nope.example.test.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NXDOMAIN");
    assert_eq!(
        r.authority(),
        vec!["example.test. 30 IN SOA ns.example.test. hostmaster.example.test. 1 7200 1800 86400 30"]
    );
    let r = udp(
        knot.addr(),
        &Query::new("example.test.", RecordType::SOA)
            .edns(1232)
            .edns_version(1),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "BADVERS");

    let ub = Unbound::start_forwarder(knot.addr()).unwrap();
    let r = udp(
        ub.addr(),
        &Query::new("www.example.test.", RecordType::A),
        T,
    )
    .unwrap();
    assert_eq!(r.rcode_name(), "NOERROR", "{r}\n{}", ub.log());
    assert_eq!(r.answers().len(), 1);
    assert!(r.answers()[0].ends_with("IN A 192.0.2.80"));
    assert!(r.has_flag("ra"));

    let addr = knot.addr();
    drop(knot);
    // Knot is gone: the port is closed.
    assert!(udp(
        addr,
        &Query::new("www.example.test.", RecordType::A),
        Duration::from_millis(300)
    )
    .is_err());
}

#[test]
fn unbound_caches_upstream_answers() {
    let up = Upstream::records(&["cached.example. 300 IN A 192.0.2.9"]).unwrap();
    let ub = Unbound::start_forwarder(up.addr()).unwrap();
    for _ in 0..3 {
        let r = udp(ub.addr(), &Query::new("cached.example.", RecordType::A), T).unwrap();
        assert_eq!(r.answers().len(), 1, "{r}");
    }
    assert_eq!(
        up.queries_for("cached.example."),
        1,
        "served from cache after the first"
    );
}
